"""SIDE Audit desktop app: Qt views and thread workers over :mod:`side_engine`.

The app computes nothing itself: long work runs in the engine on a worker
thread, and every view reads what the engine stored.
"""
