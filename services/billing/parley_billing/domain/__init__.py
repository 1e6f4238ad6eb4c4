"""The pure core of billing: markets, rate cards, the pricing engine, invoices. No I/O here
except reading the shipped data tables once."""
