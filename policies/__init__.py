"""Decision makers: which samples compute, reuse or forecast at each step (cache engine issue)."""
