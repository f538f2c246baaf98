"""Pure compute of the reference workflow: no choice of data path is made here."""
