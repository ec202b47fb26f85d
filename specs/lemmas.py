"""Strengthening lemmas for inductive proofs (see checker/z3 engine)."""
