"""What symtool writes: report documents (:mod:`.files`), their schemas (:mod:`.schema`),
one output sink (:mod:`.sink`) over per-kind tables, and the readers of finished reports:
:mod:`.check`, :mod:`.diff`, :mod:`.plot`. Nothing here imports an analysis."""
