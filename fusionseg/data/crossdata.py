"""Training on one dataset and evaluating on another: both must speak the same label space.

The model learns class ids from the training set and is scored with the evaluation set's ids and rules, so
the two must agree on the number of classes, their order (names) and which ones are things.
"""

from __future__ import annotations

from fusionseg.structures import DatasetInfo


class LabelSpaceError(ValueError):
    """The training and the evaluation dataset have different classes; the message lists the differences."""

    def __init__(self, train: DatasetInfo, evaluation: DatasetInfo, differences: list[str]) -> None:
        self.train, self.evaluation, self.differences = train, evaluation, differences
        shown = "\n  ".join(differences[:10]) + ("\n  ..." if len(differences) > 10 else "")
        super().__init__(
            f"training on {train.name!r} and evaluating on {evaluation.name!r} needs one label space, but they "
            f"differ:\n  {shown}\nPick datasets whose labels map to the same classes (e.g. synscapes or urbansyn "
            f"-> cityscapes, all in Cityscapes' train classes) and the same task for both"
        )


def label_space_differences(train: DatasetInfo, evaluation: DatasetInfo) -> list[str]:
    """What differs between two label spaces (empty when class names and thing flags agree, in order)."""
    differences = []
    if train.num_classes != evaluation.num_classes:
        differences.append(
            f"{train.num_classes} classes in {train.name!r}, {evaluation.num_classes} in {evaluation.name!r}"
        )
    for i, (a, b) in enumerate(zip(train.class_names, evaluation.class_names)):
        if a != b:
            differences.append(f"class {i}: {a!r} in {train.name!r}, {b!r} in {evaluation.name!r}")
    for i, (a, b) in enumerate(zip(train.thing_classes, evaluation.thing_classes)):
        if a != b:
            kind = {True: "a thing", False: "stuff"}
            differences.append(
                f"class {i} ({train.class_names[i]!r}) is {kind[a]} in {train.name!r}, {kind[b]} in {evaluation.name!r}"
            )
    return differences


def check_same_label_space(train: DatasetInfo, evaluation: DatasetInfo) -> None:
    """Raise `LabelSpaceError` unless `train` and `evaluation` have the same classes, in order, and things."""
    differences = label_space_differences(train, evaluation)
    if differences:
        raise LabelSpaceError(train, evaluation, differences)
