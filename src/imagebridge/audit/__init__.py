"""One record of who did what to which patient's data, denials included (ARCHITECTURE.md "Layers")."""
