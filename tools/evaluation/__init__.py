"""Offline evaluation of every recommendation strategy on a held-out split (``recsys evaluate``).

``split`` builds the leave-last-out or global-time split, ``metrics`` holds the pure metric
functions, ``strategies`` adapts the services' library code to one offline interface, ``run``
drives it all and ``report`` writes metrics.json, report.md and the charts.
"""
