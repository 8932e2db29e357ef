"""CSV files of runs: reading rows (:mod:`.rows`) and storing uploads (:mod:`.storage`)."""
