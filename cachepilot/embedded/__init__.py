"""Embedded models the project trains itself: the offline stand-ins for users' pipelines. Code here serves
one embedded model; everything outside `embedded/` serves every supported diffusers pipeline."""
