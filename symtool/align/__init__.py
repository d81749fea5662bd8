"""``symtool align``: the six CRH relations and PAH exponents of every layer.

Ziyin, Chuang, Galanti, Poggio, *Formation of Representations in Neural Networks*
(ICLR 2025, arXiv 2410.03006); docs/theory.md §1–4. Data flow: :mod:`.capture` streams the
sums (:mod:`.moments`), :mod:`.crh` scores the relations with :mod:`.score`'s α and null,
:mod:`.pah` fits the exponents, :mod:`.run` drives it over a checkpoint sequence.
"""

from symtool.align.run import AlignSettings, run_align

__all__ = ["AlignSettings", "run_align"]
