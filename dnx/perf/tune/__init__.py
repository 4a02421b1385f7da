"""``dnx tune``: find the fastest served config on this machine and write it into the repository.

:mod:`.space` (search space, knobs <-> configs, the coordinate search), :mod:`.decision`
(objective, candidates, the typed :class:`Decision`), :mod:`.options` (options and result),
:mod:`.measure` (candidates measured on a real server), :mod:`.write_back` (all or nothing),
:mod:`.report`, :mod:`.run` (:func:`run_tune`, what the command calls).
"""
