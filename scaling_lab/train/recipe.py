"""The recipe switch: ``reference`` reproduces the reference trainer piece for piece; ``ours``
departs from it where we think it is better practice, each departure one sentence below.

Everything else (augmentations, their probabilities, the optimizer, schedule, EMA and loss) is
the same under both. Label assignment follows the recipe unless ``assign`` names a rule (the
paper-table experiments name it, so that both rules can run under either recipe).
"""

from __future__ import annotations

from typing import Literal, get_args

from scaling_lab.train.choices import AssignMode

Recipe = Literal["reference", "ours"]
RECIPES: tuple[str, ...] = get_args(Recipe)
DEFAULT_RECIPE: Recipe = "reference"

# What ``ours`` does differently, one sentence each (docs/recipe.md lists them too).
OURS_DIFFERS = {
    "data order": (
        "the training images are visited in a new random order every epoch (seeded), where the "
        "reference's single-process loader visits them in file order every epoch (its DDP "
        "sampler shuffles, and so does the reference recipe here under DDP)"
    ),
    "label assignment": (
        "each target competes only for the cells of its own centre prior and a prediction is "
        "positive for at most one target (``assign: own_prior``, loss.py), where the reference "
        "pools every target's candidates per image and lets a prediction count twice"
    ),
}
DEFAULT_ASSIGN: dict[str, AssignMode] = {"reference": "reference", "ours": "own_prior"}


def default_assign(recipe: str = DEFAULT_RECIPE) -> AssignMode:
    """The label assignment rule of a recipe (when a run or a loss does not name one)."""
    return DEFAULT_ASSIGN[recipe]


def shuffles_training_order(recipe: str, *, distributed: bool) -> bool:
    """Whether the training order is reshuffled every epoch."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    return recipe == "ours" or distributed
