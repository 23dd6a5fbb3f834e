"""Task ``tabular``: classification or regression on any table, described by a user's schema."""
