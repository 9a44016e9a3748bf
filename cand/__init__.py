"""cand: compute-aware anycast (Dyncast / IETF CATS) control-plane daemon."""

__version__ = "0.1.0"
