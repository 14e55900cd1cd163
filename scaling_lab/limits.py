"""Every bound on user input, in one place (the README's Errors section lists them).

Input is refused with a ``UserError`` before it can exhaust the machine: text files are read
only when they are regular files below a size, YAML is measured after alias expansion before
any code walks it, graphs and their lowering are bounded in size, and a model that would not
fit in the memory left is refused before it is allocated. Plain constants, no imports: every
layer of the package may read them.
"""

from __future__ import annotations

# --- files ----------------------------------------------------------------------------------
MAX_TEXT_BYTES = 4 << 20  # a spec, layer-list config, experiment, search space or data.yaml
MAX_ANNOTATION_BYTES = 1 << 30  # a COCO annotation file (COCO train2017's is 448 MB)
MAX_LABEL_BYTES = 1 << 20  # one YOLO-txt label file
MAX_TABLE_BYTES = 64 << 20  # a latency table (JSON; the zoo's YOLOv7 family takes ~0.3 MB)

# --- YAML -----------------------------------------------------------------------------------
MAX_YAML_DEPTH = 32  # nested mappings / lists
MAX_YAML_NODES = 200_000  # scalars, lists and mappings, counted after alias expansion
# characters of one integer in a YAML or JSON file: far beyond any bound above, and far below
# the 4300 digits past which Python refuses to convert (or print) an integer
MAX_INT_CHARS = 100

# --- graphs ---------------------------------------------------------------------------------
MAX_SPEC_NODES = 5_000  # nodes of one spec (the largest zoo model has about 200)
MAX_BLOCK_DEPTH = 64  # a block's depth / repeats field, and a layer-list entry's `number`
MAX_LAYERS = 50_000  # layers one BlockGraph lowers to
MAX_IMG_SIZE = 8192  # input side in pixels (a spec's img_size, --img, overrides)
MAX_NC = 100_000  # classes
MAX_CHANNELS = 1 << 16  # channels of the image input
MAX_SYNTH_IMAGES = 100_000  # images of a synthetic shapes set
MAX_WORKERS = 256  # data loader processes
MAX_THREADS = 1_024  # intra-op threads of a latency run, CPUs of the embedded Ray
MAX_ITERS = 1_000_000  # timed (and warm-up) calls of a latency run
MEMORY_FRACTION = 0.9  # a model (and its batch) must fit in this share of the memory left

# --- experiments and sweeps -----------------------------------------------------------------
MAX_SEARCH_ABS = 1e6  # |low|, |high| and step of an int / float search range
MAX_CHOICES = 1_000  # choices of a categorical search parameter
MAX_TRIALS = 10_000  # a search's trial budget
MAX_SCREEN = 100_000  # designs a search screens without training (about 30 ms each, counts only)
MAX_VARIANTS = 1_000  # rows of a table experiment
MAX_SEEDS = 100  # repeats (``seeds:``) of every row of a table experiment
MAX_NAME_CHARS = 100  # an experiment name (also a folder name)
