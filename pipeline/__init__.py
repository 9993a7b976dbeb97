"""onair domain: settings, ladder, media units, GOPs, playlists, ABR, object store, CLI."""
