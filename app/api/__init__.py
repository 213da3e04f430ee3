"""HTTP layer: one thin router per resource; engine errors become 4xx here and only here."""
