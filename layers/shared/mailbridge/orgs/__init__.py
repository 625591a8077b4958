"""What an organization sets once for all its agents: shared OAuth apps (its own, or a client
organization's), client organizations with their email policy, and that policy enforced."""
