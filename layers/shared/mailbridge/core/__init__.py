"""What every feature shares and none owns: the error family, settings, deadlines, counting
windows, logging and metrics, shared value types, and the one way into the adapters.

Nothing here imports another package of mailbridge.
"""
