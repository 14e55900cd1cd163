"""The Table 1 rows added to the zoo: YOLOv4, YOLOR-u5 (r6.1) and YOLOv4-tiny-3l.

Their counts are pinned against independent sums: YOLOv4's Darknet layers written out, the
YOLOR-u5 head against YOLOv5-L's, and YOLOv4-tiny-3l as YOLOv4-tiny plus its third level.
"""

from scaling_lab import count_graph, get_layer_graph


def conv(c_in, c_out, k=1):  # conv + BatchNorm (weight, bias)
    return c_out * c_in * k * k + 2 * c_out


def pred(c_in, n_out=255):  # 1x1 prediction conv with bias
    return c_in * n_out + n_out


def _params(name, deploy=False, img_size=None):
    return count_graph(get_layer_graph(name, deploy=deploy, img_size=img_size)).params


def _csp_stage(c, depth, hidden=None, unit_hidden=None):
    """Darknet CSP stage after its 3x3 stride-2 conv: two 1x1 (hidden), units, 1x1, 1x1 to c."""
    hidden = hidden or c // 2
    unit_hidden = unit_hidden or hidden
    unit = conv(hidden, unit_hidden) + conv(unit_hidden, hidden, 3)
    return 2 * conv(c, hidden) + depth * unit + conv(hidden, hidden) + conv(2 * hidden, c)


def test_yolov4_is_the_darknet_layer_sum():
    backbone = conv(3, 32, 3) + conv(32, 64, 3) + _csp_stage(64, 1, hidden=64, unit_hidden=32)
    for c_in, c, depth in ((64, 128, 2), (128, 256, 8), (256, 512, 8), (512, 1024, 4)):
        backbone += conv(c_in, c, 3) + _csp_stage(c, depth)

    def five(c_in, c):  # 1x1, 3x3, 1x1, 3x3, 1x1
        return conv(c_in, c) + 2 * (conv(c, 2 * c, 3) + conv(2 * c, c))

    spp = conv(1024, 512) + conv(512, 1024, 3) + conv(1024, 512)
    spp += conv(2048, 512) + conv(512, 1024, 3) + conv(1024, 512)
    top_down = conv(512, 256) + conv(512, 256) + five(512, 256)
    top_down += conv(256, 128) + conv(256, 128) + five(256, 128)
    bottom_up = conv(128, 256, 3) + five(512, 256) + conv(256, 512, 3) + five(1024, 512)
    heads = conv(128, 256, 3) + conv(256, 512, 3) + conv(512, 1024, 3)
    heads += pred(256) + pred(512) + pred(1024)
    expected = backbone + spp + top_down + bottom_up + heads
    assert expected == 64_363_101 == _params("yolov4")


def test_yolor_u5_is_yolov5l_with_an_implicit_head():
    assert _params("yolor-u5", deploy=True) == _params("yolov5l", deploy=True)
    implicit = (256 + 512 + 1024) + 3 * 255  # ImplicitA per input width, ImplicitM per level
    assert _params("yolor-u5") == _params("yolov5l") + implicit


def test_yolov4_tiny_3l_is_yolov4_tiny_plus_a_p3_level():
    # 1x1 to 64 on the P4 output, 3x3 to 128 on [upsampled, P3 stage 1x1 (128)], prediction;
    # the P4 and P5 predictions have the same widths as YOLOv4-tiny's
    third = conv(256, 64) + conv(64 + 128, 128, 3) + pred(128)
    assert _params("yolov4-tiny-3l") == _params("yolov4-tiny") + third == 6_327_453
    gflops = count_graph(get_layer_graph("yolov4-tiny-3l", img_size=320)).gflops
    assert round(gflops, 2) == 4.91  # Table 1's 8.7M / 5.2G is not this config (see the spec)
