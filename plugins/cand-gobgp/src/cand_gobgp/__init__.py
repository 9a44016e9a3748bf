"""cand speaker plugin for GoBGP (gobgpd v3, gRPC API)."""
