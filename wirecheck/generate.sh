#!/usr/bin/env bash
# Regenerates wirecheck/schema_gen.go from Apache Kafka's own message
# definitions, the JSON files inside the kafka-clients jars on Maven Central.
# Run by `make generate`; `make check-generate` fails when the committed file
# differs from what this produces.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OLD=${WIRECHECK_KAFKA_OLD:-3.9.2}
NEW=${WIRECHECK_KAFKA_NEW:-4.4.0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for v in "$OLD" "$NEW"; do
	mvn -B -q dependency:copy -Dartifact="org.apache.kafka:kafka-clients:$v" -DoutputDirectory="$tmp" ||
		{ echo "wirecheck/generate.sh: cannot fetch org.apache.kafka:kafka-clients:$v from Maven" >&2; exit 1; }
done
${GO:-go} run ./wirecheck/internal/gen \
	-old "$tmp/kafka-clients-$OLD.jar" -new "$tmp/kafka-clients-$NEW.jar" \
	-sources "kafka-clients $OLD and $NEW" -out wirecheck/schema_gen.go
# Where kmsg decodes tagged fields at versions Kafka does not define them at,
# measured from kmsg's own encoding (stray_gen.go).
${GO:-go} test ./wirecheck -count=1 -run '^TestStrayCalibration$' -update >/dev/null
