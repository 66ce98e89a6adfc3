"""Everything that touches a torch model: loading, data, masking, slicing, importance, solvers,
reformation and export. Imports only ``search_spaces`` and ``nas_llm.errors``; every later stage
(objectives, search, front, reform of a run, export of a run, CLI) builds on it."""
