"""`ppkt predict`: a trained model on a user's own scans (scan reading and checks, tiled inference, outputs)."""
