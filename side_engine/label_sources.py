"""What each label source means for the rest of an audit, in one place.

A label source decides where surrogate classes live (the training images, or clusters of the
model's own samples), whether a time-independent (TI) classifier is trained on them, whether the
user's labels file is read, and what "a guided sample reached its target" means. Every stage and
reader asks the policy instead of comparing the setting's name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelPolicy:
    name: str
    on_synthetic_set: bool  # classes are clusters of the model's own samples (the synthetic set is made first)
    trains_ti: bool  # a TI classifier learns the training images' classes (SIDE distils it, TI guidance uses it)
    reads_labels_csv: bool  # the classes are the user's labels (labels_csv, or the folders)

    @property
    def on_target_by(self) -> str:
        """What a guided sample must reach to be on target: the target's cluster, or a training
        image of the target class."""
        return "cluster" if self.on_synthetic_set else "training image"


POLICIES: dict[str, LabelPolicy] = {
    "original": LabelPolicy("original", on_synthetic_set=False, trains_ti=True, reads_labels_csv=True),
    "clusters": LabelPolicy("clusters", on_synthetic_set=False, trains_ti=True, reads_labels_csv=False),
    "random": LabelPolicy("random", on_synthetic_set=False, trains_ti=True, reads_labels_csv=False),
    "synthetic-clusters": LabelPolicy("synthetic-clusters", on_synthetic_set=True, trains_ti=False,
                                      reads_labels_csv=False),
}


def label_policy(name: str) -> LabelPolicy:
    return POLICIES[name]
