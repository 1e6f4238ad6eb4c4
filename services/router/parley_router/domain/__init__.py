"""The router's pure core: signals, language, intent classifier, routing rules. No I/O here."""
