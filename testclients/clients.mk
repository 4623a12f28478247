# Real Kafka clients used by the tests (filled in by the clients work).
.PHONY: deps
deps:
	@true
