"""Operating a deployed repository: golden answers, ``dnx check``, metrics, dashboards and alerts."""
