"""Servers that foldserve is measured against: the echo floor (canned replies on the same gRPC
stack) and a bare model server (the model, nothing else)."""
