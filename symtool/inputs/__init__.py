"""What symtool reads: checkpoints (:mod:`.checkpoints`), models and their linear maps
(:mod:`.models`, user code through :mod:`.imports`) and probe data (:mod:`.probes`)."""
