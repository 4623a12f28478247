// Package mirror replicates topics, configs, records and consumer-group
// offsets from a source Kafka cluster to a target cluster, keeping an exact
// source-to-target offset map. It is not implemented yet; see the project's
// issue tracker ("Mirror engine").
package mirror
