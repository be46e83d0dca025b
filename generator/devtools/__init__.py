"""Developer tools run by hand or by make (golden renders, catalog extraction, router catalog
dumps); no command imports them at run time."""
