"""Who changed what, and when: an entry for every change of a connection, a shared app or a
client organization's policy (and every refusal by policy), written in the same DynamoDB
transaction as the change; the histories admins read."""
