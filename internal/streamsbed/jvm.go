package streamsbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/switchyard/switchyard/internal/childproc"
	"github.com/switchyard/switchyard/internal/kafkatest"
)

// Settings of the test bed read through kafkatest.Env (the environment,
// else the env file `make kafka-up` writes).
const (
	// EnvStreamsLib names a lib dir to run the JVMs from instead of the
	// test bed's own: a 3.x test bed has no Kafka Streams examples (Maven
	// Central has none for 3.9.x), so its runs take a 4.x lib.
	EnvStreamsLib = "SWITCHYARD_TEST_STREAMS_LIB"
	// EnvKafkaLib is the test bed's lib dir, written by `make kafka-up`.
	EnvKafkaLib = "SWITCHYARD_TEST_KAFKA_LIB"
	// envStateDir is the test bed's state dir: the JVMs started here carry
	// its marker, so `make kafka-down` stops any a test left behind.
	envStateDir = "SWITCHYARD_TEST_STATE_DIR"
)

// Lib is a directory of Kafka jars holding Kafka Streams, its examples and
// Kafka's tools, all of one version.
type Lib struct {
	Dir string
	// Version is the Kafka version of the jars, e.g. "4.3.1".
	Version string
}

var examplesJar = regexp.MustCompile(`^kafka-streams-examples-([0-9]+\.[0-9]+\.[0-9]+)\.jar$`)

// FindLib returns the lib dir named by SWITCHYARD_TEST_STREAMS_LIB, else the
// test bed's (SWITCHYARD_TEST_KAFKA_LIB). The error says what to do when
// neither holds the Kafka Streams examples.
func FindLib() (Lib, error) {
	dir, from := kafkatest.Env(EnvStreamsLib), EnvStreamsLib
	if dir == "" {
		dir, from = kafkatest.Env(EnvKafkaLib), EnvKafkaLib
	}
	if dir == "" {
		return Lib{}, fmt.Errorf("neither %s nor %s is set, in the environment or in %s: start the test bed with `make kafka-up` "+
			"(a test bed started by an older testbed/kafka.sh does not write %s)", EnvStreamsLib, EnvKafkaLib, kafkatest.EnvFile(), EnvKafkaLib)
	}
	return OpenLib(dir, from)
}

// OpenLib checks that dir holds the Kafka Streams examples and tells their
// version; from names where dir came from, for the error.
func OpenLib(dir, from string) (Lib, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return Lib{}, fmt.Errorf("kafka lib dir %s (%s): %w", dir, from, err)
	}
	for _, e := range ents {
		if m := examplesJar.FindStringSubmatch(e.Name()); m != nil {
			return Lib{Dir: dir, Version: m[1]}, nil
		}
	}
	return Lib{}, fmt.Errorf("kafka lib dir %s (%s) has no kafka-streams-examples jar: on Kafka 4.x run `testbed/kafka.sh fetch` "+
		"(testbed/pom.xml resolves it); Maven Central has none for 3.9.x, so for a 3.x test bed set %s to a 4.x lib "+
		"(`KAFKA_VERSION=4.3.1 testbed/kafka.sh fetch`, then testbed/.cache/4.3.1/lib)", dir, from, EnvStreamsLib)
}

// log4j2 is the logging of a 4.x JVM; log4j1 of a 3.x one (reload4j). Both
// write INFO and above to the file, plus the DEBUG lines of the classes
// that tell what Streams does with its state (their lines are DEBUG in
// Kafka 4.3: StateManagerUtil's "Wiping state stores", StoreChangelogReader's
// "Start restoring changelog partition").
const log4j2 = `status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = %s
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%%d] %%p %%m (%%c)%%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.wipe.name = org.apache.kafka.streams.processor.internals.StateManagerUtil
logger.wipe.level = DEBUG
logger.restore.name = org.apache.kafka.streams.processor.internals.StoreChangelogReader
logger.restore.level = DEBUG
logger.pconf.name = org.apache.kafka.clients.producer.ProducerConfig
logger.pconf.level = WARN
logger.cconf.name = org.apache.kafka.clients.consumer.ConsumerConfig
logger.cconf.level = WARN
logger.aconf.name = org.apache.kafka.clients.admin.AdminClientConfig
logger.aconf.level = WARN
logger.sconf.name = org.apache.kafka.streams.StreamsConfig
logger.sconf.level = WARN
`

const log4j1 = `log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=%s
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=[%%d] %%p %%m (%%c)%%n
log4j.logger.org.apache.kafka.streams.processor.internals.StateManagerUtil=DEBUG
log4j.logger.org.apache.kafka.streams.processor.internals.StoreChangelogReader=DEBUG
log4j.logger.org.apache.kafka.clients.producer.ProducerConfig=WARN
log4j.logger.org.apache.kafka.clients.consumer.ConsumerConfig=WARN
log4j.logger.org.apache.kafka.clients.admin.AdminClientConfig=WARN
log4j.logger.org.apache.kafka.streams.StreamsConfig=WARN
`

// jvm is one JVM the bed started. Its log4j output goes to Log, its
// standard error (and standard output, unless the caller reads it) to
// Stderr.
type jvm struct {
	name   string
	cmd    *exec.Cmd
	Log    string
	Stderr string
	done   chan struct{}
	err    error // set before done closes
}

// startJVM runs class with args from lib, its logging configured to write
// to dir/name.log, standard error to dir/name.stderr. stdout, when not nil,
// receives the program's standard output (else it goes to the stderr
// file); it has received all of it when the JVM is seen exited. The JVM
// dies with this process (Linux), and carries the test bed's marker so that
// `make kafka-down` stops it if a test left it behind.
func startJVM(lib Lib, dir, name string, stdout io.Writer, class string, args ...string) (*jvm, error) {
	j := &jvm{name: name, Log: filepath.Join(dir, name+".log"), Stderr: filepath.Join(dir, name+".stderr"), done: make(chan struct{})}
	jargs := []string{"-Xmx384m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"}
	if sd := kafkatest.Env(envStateDir); sd != "" {
		jargs = append(jargs, "-Dswitchyard.testbed="+sd)
	}
	cfg, prop, tmpl := filepath.Join(dir, name+"-log4j2.properties"), "-Dlog4j2.configurationFile=", log4j2
	if strings.HasPrefix(lib.Version, "3.") {
		cfg, prop, tmpl = filepath.Join(dir, name+"-log4j.properties"), "-Dlog4j.configuration=file:", log4j1
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(tmpl, j.Log)), 0o644); err != nil {
		return nil, fmt.Errorf("%s: write log config: %w", name, err)
	}
	jargs = append(jargs, prop+cfg, "-cp", filepath.Join(lib.Dir, "*"), class)
	j.cmd = exec.Command("java", append(jargs, args...)...)
	j.cmd.Dir = dir
	childproc.DieWithParent(j.cmd)
	errf, err := os.Create(j.Stderr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	j.cmd.Stderr, j.cmd.Stdout = errf, errf
	if stdout != nil {
		j.cmd.Stdout = stdout
	}
	if err := j.cmd.Start(); err != nil {
		errf.Close()
		return nil, fmt.Errorf("%s: start java: %w", name, err)
	}
	go func() {
		err := j.cmd.Wait()
		errf.Close()
		if err != nil {
			err = fmt.Errorf("%s (pid %d): %w", name, j.cmd.Process.Pid, err)
		}
		j.err = err
		close(j.done)
	}()
	return j, nil
}

// Pid is the JVM's process id.
func (j *jvm) Pid() int { return j.cmd.Process.Pid }

// exited reports whether the JVM has exited, and how.
func (j *jvm) exited() (bool, error) {
	select {
	case <-j.done:
		return true, j.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM (the programs' shutdown hooks close their clients
// cleanly) and waits for the exit; at ctx's end it kills the JVM and says
// so. An exit status other than 0, or 143 (SIGTERM not handled), is an
// error.
func (j *jvm) stop(ctx context.Context) error {
	if done, err := j.exited(); done {
		return fmt.Errorf("%s had exited already: %v", j.name, err)
	}
	_ = j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.done:
		var ee *exec.ExitError
		if errors.As(j.err, &ee) && ee.ExitCode() == 143 {
			return nil
		}
		return j.err
	case <-ctx.Done():
		j.kill()
		return fmt.Errorf("%s did not stop within its deadline after SIGTERM (%w): killed", j.name, ctx.Err())
	}
}

// kill sends SIGKILL and waits for the exit (a crash, for the test).
func (j *jvm) kill() {
	_ = j.cmd.Process.Signal(syscall.SIGKILL)
	<-j.done
}
