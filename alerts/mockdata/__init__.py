"""Mock data: simulated pipeline events, PSDs and ranking data, and the
replay of an observing run built from them (not science: test and
benchmark input)."""
