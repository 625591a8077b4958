"""What every feature shares and none owns: the error family, settings, deadlines, counting
windows, logging and metrics, shared value types, the end of an instance's init, and the one
way into the adapters.

Nothing here imports another package of mailbridge, but for `adapters.load_adapter`, which
loads an adapter module by name when a port first asks for it.
"""
