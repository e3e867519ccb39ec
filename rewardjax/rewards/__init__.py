"""Reward sources: verifiers, self-rewards, model scores, shaping and composition."""
