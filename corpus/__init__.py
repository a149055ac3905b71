"""The Japanese corpus pipeline of the prepare stage, as datatrove blocks: read, clean, filter, deduplicate, pack."""
