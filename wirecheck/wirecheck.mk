# wirecheck's schema table (wirecheck/schema_gen.go), generated from Apache
# Kafka's own message definitions in the kafka-clients jars on Maven Central,
# and its calibration against kmsg (wirecheck/stray_gen.go).
# `make generate` regenerates it with the rest; `make check-generate` fails
# when the committed file is stale.
.PHONY: generate-wirecheck
generate: generate-wirecheck
generate-wirecheck:
	GO=$(GO) wirecheck/generate.sh
