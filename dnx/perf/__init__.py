"""Performance measurement, by capability; every package depends only on the ones below it.

* :mod:`.sweep` (``dnx perf``), :mod:`.bench` (``dnx bench``, may use sweep), :mod:`.tune`
  (``dnx tune``): each command's loop, its options and its typed results;
* :mod:`.analyzer`: the only code that runs perf_analyzer (binary, argv, CSV, one level with retries);
* :mod:`.served`: what the server serves and dnx can measure, model control, the launched server,
  the manifest's view of each model;
* :mod:`.levels` (concurrency policy: ranges, fill level, saturation), :mod:`.results` (results
  folders, machine info, best row), :mod:`.images` (JPEG input data).
"""
