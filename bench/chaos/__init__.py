"""The chaos suite: engine replicas SIGKILLed at random moments while paging every channel kind,
and every page counted. `python -m bench.chaos` (bench/README.md, "Chaos")."""
