# Real Apache Kafka test bed (filled in by the test-bed work).
.PHONY: test-real
test-real:
	@true
