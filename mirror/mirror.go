package mirror

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/mirror/offsetmap"
	"github.com/switchyard/switchyard/mirror/topics"

	"github.com/switchyard/switchyard/kafkasec"
)

// Mirror copies selected topics from a source to a target cluster. Create
// it with New and run it with Run; Status, OffsetMap and SyncGroups are
// safe to call concurrently with Run.
type Mirror struct {
	cfg    Config
	log    *zap.Logger
	m      *metrics
	sel    *topics.Selector
	groups []*regexp.Regexp
	// gapPolicy returns a source topic's gap policy (GapStop, GapContinue).
	gapPolicy func(topic string) string
	opts      []kgo.Opt // extra client options (tests)
	// srcSec and dstSec connect to the clusters (TLS, SASL).
	srcSec, dstSec *kafkasec.Security

	mu       sync.Mutex
	parts    map[tp]*partition
	topicErr map[string]string
	assign   *assignment  // scale-out only
	srcAdm   *kadm.Client // the running mirror's source admin client (nil before Run)
	acls     *ACLSummary  // last ACL sync, nil when off or not yet run
	running  bool
	// readyCh is closed (under mu, with lastErr cleared) when the mirror is
	// ready: the offset maps are restored, the topics synced.
	readyCh chan struct{}
	lastErr string
	// refresh carries RefreshTopics' requests to the running topic loop;
	// each is answered on its channel once a sync ran.
	refresh chan chan error
}

// partition is the state of one source partition.
type partition struct {
	src    tp
	target string
	om     *offsetmap.Map

	// Guarded by Mirror.mu.
	hwm        int64     // source high watermark last seen
	oldestTS   time.Time // timestamp of the next record to copy, when lagging
	failures   int
	lastErr    string
	lastCommit time.Time
	// lostOffsets counts the offsets of every gap the mirror went on after
	// in this partition (restored from the checkpoint); lastLost is the
	// latest such gap.
	lostOffsets int64
	lastLost    offsetmap.LostRange
}

// noteRestored sets what the partition's status says of gaps from its map
// as restored from the checkpoint topic (before any TrimBefore). Call it
// with Mirror.mu held.
func (p *partition) noteRestored(om *offsetmap.Map) {
	p.lostOffsets, p.lastLost = 0, offsetmap.LostRange{}
	for _, r := range om.Lost() {
		p.lostOffsets += r.Len()
		p.lastLost = r
	}
}

// New validates cfg and prepares a mirror. It contacts no cluster; Run does.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer, opts ...kgo.Opt) (*Mirror, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mirror config: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	sel, err := cfg.Topics.Compile()
	if err != nil {
		return nil, fmt.Errorf("mirror config: topics: %w", err)
	}
	gapPolicy, err := cfg.Gaps.compile()
	if err != nil {
		return nil, fmt.Errorf("mirror config: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("mirror metrics: %w", err)
	}
	srcSec, err := kafkasec.New(context.Background(), "source", cfg.Source)
	if err != nil {
		return nil, fmt.Errorf("mirror config: source: %w", err)
	}
	dstSec, err := kafkasec.New(context.Background(), "target", cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("mirror config: target: %w", err)
	}
	mr := &Mirror{
		cfg:       cfg,
		log:       log.With(zap.String("mirror", cfg.Name)),
		m:         m,
		sel:       sel,
		gapPolicy: gapPolicy,
		opts:      opts,
		srcSec:    srcSec,
		dstSec:    dstSec,
		parts:     map[tp]*partition{},
		topicErr:  map[string]string{},
		refresh:   make(chan chan error),
		readyCh:   make(chan struct{}),
	}
	for _, g := range cfg.Groups {
		mr.groups = append(mr.groups, regexp.MustCompile("^(?:"+g+")$"))
	}
	return mr, nil
}

func (mr *Mirror) sourceClient(opts ...kgo.Opt) (*kgo.Client, error) {
	return mr.client(mr.cfg.SourceBootstrap, mr.srcSec, opts)
}

func (mr *Mirror) targetClient(opts ...kgo.Opt) (*kgo.Client, error) {
	return mr.client(mr.cfg.TargetBootstrap, mr.dstSec, opts)
}

func (mr *Mirror) client(bootstrap []string, sec *kafkasec.Security, opts []kgo.Opt) (*kgo.Client, error) {
	all := append([]kgo.Opt{kgo.SeedBrokers(bootstrap...)}, sec.KgoOpts(0)...)
	all = append(all, mr.opts...)
	return kgo.NewClient(append(all, opts...)...)
}

// Run mirrors until ctx is cancelled (then it returns nil) or another
// mirror with the same name takes over (fenced). Clusters unreachable at
// start are waited for (Status says why it is not ready). Failures of
// single partitions are not fatal: they are retried with backoff and shown
// in Status.
func (mr *Mirror) Run(ctx context.Context) (err error) {
	defer func() {
		// Cancellation is a clean stop, whatever step it interrupted.
		if ctx.Err() != nil {
			err = nil
		}
	}()
	mr.mu.Lock()
	if mr.running {
		mr.mu.Unlock()
		return errors.New("mirror: Run called twice")
	}
	mr.running = true
	mr.mu.Unlock()

	src, err := mr.sourceClient(kgo.MaxVersions(clientVersions()))
	if err != nil {
		return fmt.Errorf("source client: %w", err)
	}
	defer src.Close()
	dst, err := mr.targetClient(kgo.MaxVersions(clientVersions()))
	if err != nil {
		return fmt.Errorf("target client: %w", err)
	}
	defer dst.Close()
	srcAdm, dstAdm := kadm.NewClient(src), kadm.NewClient(dst)
	mr.mu.Lock()
	mr.srcAdm = srcAdm
	mr.mu.Unlock()
	defer func() {
		mr.mu.Lock()
		mr.srcAdm = nil
		mr.mu.Unlock()
	}()

	// Starting retries: a cluster not reachable yet (a mirror started
	// with its clusters, a network policy still applying) is waited for,
	// with the reason in Status, rather than ending the process.
	if err := mr.retryStart(ctx, "create the checkpoint topic", func() error {
		return ensureCheckpointTopic(ctx, dstAdm, mr.cfg.checkpointTopic())
	}); err != nil {
		return err
	}
	// The producer's first epoch fences a previous instance and settles
	// the transaction it left; then the checkpoint topic holds every delta
	// ever committed, and reading it to its end restores the maps.
	prod := newTxnProducer(dst, mr.cfg.transactionalID(), mr.cfg.TxnTimeout)
	if err := mr.retryStart(ctx, "initialize the transactional producer", func() error { return prod.init(ctx) }); err != nil {
		return fmt.Errorf("mirror %s: %w", mr.cfg.Name, err)
	}
	var maps map[tp]*offsetmap.Map
	if err := mr.retryStart(ctx, "restore the offset maps", func() (err error) {
		maps, err = restoreCheckpoints(ctx, dst, mr.cfg.checkpointTopic())
		return err
	}); err != nil {
		return err
	}
	begun := make(map[tp]bool, len(maps))
	mr.mu.Lock()
	for t, om := range maps {
		p := &partition{src: t, target: mr.sel.TargetName(t.topic), om: om, hwm: -1}
		p.noteRestored(om)
		mr.parts[t] = p
		begun[t] = true
	}
	mr.mu.Unlock()
	mr.log.Info("mirror restored", zap.Int("partitions", len(maps)))
	codecs, err := newCodecs()
	if err != nil {
		return err
	}
	cp := &copier{mr: mr, src: src, dst: dst, prod: prod, codecs: codecs,
		srcLeader: &leaderCache{cl: src}, dstLeader: &leaderCache{cl: dst}, begun: begun}
	if mr.cfg.ScaleOut {
		a := newAssignment(mr.log)
		member, err := mr.targetClient(a.groupOpts(&mr.cfg)...)
		if err != nil {
			return fmt.Errorf("mirror %s: group member: %w", mr.cfg.Name, err)
		}
		defer member.Close()
		a.cl = member
		a.onRevoked = mr.forgetPartitionMetrics
		cp.assign = a
		mr.mu.Lock()
		mr.assign = a
		mr.mu.Unlock()
	}

	syncer := topics.NewSyncer(srcAdm, dstAdm, mr.sel)
	if err := mr.retryStart(ctx, "sync topics", func() error { return mr.syncTopics(ctx, syncer) }); err != nil {
		return err
	}
	mr.mu.Lock()
	mr.lastErr = ""
	close(mr.readyCh)
	mr.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cp.run(gctx) })
	g.Go(func() error { return mr.topicLoop(gctx, syncer, srcAdm, dstAdm) })
	g.Go(func() error { return mr.groupLoop(gctx, srcAdm, dstAdm) })
	g.Go(func() error { return mr.positionLoop(gctx, srcAdm) })
	return g.Wait()
}

// retryStart runs a startup step until it succeeds, with backoff, keeping
// its last error in Status. It gives up only when ctx ends or another
// instance fenced this one.
func (mr *Mirror) retryStart(ctx context.Context, what string, step func() error) error {
	backoff := mr.cfg.RetryBackoff
	lastLogged := ""
	for {
		err := step()
		if err == nil || ctx.Err() != nil || errors.Is(err, errFenced) {
			return err
		}
		msg := fmt.Sprintf("starting: %s: %v", what, err)
		mr.mu.Lock()
		mr.lastErr = msg
		mr.mu.Unlock()
		if msg != lastLogged {
			mr.log.Warn("mirror start: retrying", zap.String("step", what), zap.Error(err), zap.Duration("backoff", backoff))
			lastLogged = msg
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, mr.cfg.RetryBackoffMax)
	}
}

// syncTopics runs one topic sync and registers the partitions of every
// topic that synced cleanly. A topic with an error is not copied; the
// error shows in Status.
func (mr *Mirror) syncTopics(ctx context.Context, syncer *topics.Syncer) error {
	rep, err := syncer.Sync(ctx)
	if err != nil {
		return fmt.Errorf("topic sync: %w", err)
	}
	mr.mu.Lock()
	for _, t := range rep.Topics {
		if t.Err != nil {
			if mr.topicErr[t.Source] != t.Err.Error() {
				mr.log.Error("topic not mirrored", zap.String("topic", t.Source), zap.Error(t.Err))
			}
			mr.topicErr[t.Source] = t.Err.Error()
			continue
		}
		delete(mr.topicErr, t.Source)
		for p := int32(0); p < int32(t.Partitions); p++ {
			k := tp{t.Source, p}
			if _, ok := mr.parts[k]; ok {
				continue
			}
			mr.parts[k] = &partition{src: k, target: t.Target, om: offsetmap.New(), hwm: -1}
		}
	}
	a := mr.assign
	mr.mu.Unlock()
	if a != nil {
		subs := map[string]string{}
		for _, t := range rep.Topics {
			if t.Err == nil {
				subs[t.Target] = t.Source
			}
		}
		a.subscribe(subs)
	}
	return nil
}

// topicLoop syncs topics every TopicSyncInterval, at once when the
// TopicPollInterval poll sees a new selected topic or partition on the
// source, and whenever RefreshTopics asks.
func (mr *Mirror) topicLoop(ctx context.Context, syncer *topics.Syncer, srcAdm, dstAdm *kadm.Client) error {
	full := time.NewTicker(mr.cfg.TopicSyncInterval)
	defer full.Stop()
	poll := time.NewTicker(mr.cfg.TopicPollInterval)
	defer poll.Stop()
	// The first topic sync ran before the copy started; ACLs follow it.
	mr.syncACLs(ctx, srcAdm, dstAdm)
	for {
		var asked chan error
		select {
		case <-ctx.Done():
			return nil
		case <-full.C:
		case <-poll.C:
			if !mr.topicsChanged(ctx, srcAdm) {
				continue
			}
		case asked = <-mr.refresh:
		}
		err := mr.syncTopics(ctx, syncer)
		if asked != nil {
			asked <- err // buffered
		}
		if err != nil && ctx.Err() == nil {
			mr.log.Warn("topic sync", zap.Error(err))
		}
		mr.syncACLs(ctx, srcAdm, dstAdm)
	}
}

// topicsChanged reports whether the source has a selected topic, or a
// partition of one, that the mirror does not copy yet. Topics whose last
// sync failed are left to the full sync, so that a topic the target
// refuses is not retried every poll.
func (mr *Mirror) topicsChanged(ctx context.Context, srcAdm *kadm.Client) bool {
	listed, err := srcAdm.ListTopics(ctx)
	if err != nil {
		return false // the full sync reports it
	}
	mr.mu.Lock()
	defer mr.mu.Unlock()
	for name, d := range listed {
		if d.Err != nil || !mr.sel.Selects(name) {
			continue
		}
		if _, failed := mr.topicErr[name]; failed {
			continue
		}
		for p := range d.Partitions {
			if _, ok := mr.parts[tp{name, p}]; !ok {
				return true
			}
		}
	}
	return false
}

// RefreshTopics syncs topics now — new source topics and partitions get
// created on the target and copied — and returns once that sync ran. It
// needs a running mirror. A cutover's preflight calls it for the topics it
// covers that the mirror does not copy yet.
func (mr *Mirror) RefreshTopics(ctx context.Context) error {
	mr.mu.Lock()
	running := mr.running
	mr.mu.Unlock()
	if !running {
		return errors.New("refresh topics: the mirror is not running")
	}
	asked := make(chan error, 1)
	select {
	case mr.refresh <- asked:
	case <-ctx.Done():
		return fmt.Errorf("refresh topics: %w", ctx.Err())
	}
	select {
	case err := <-asked:
		return err
	case <-ctx.Done():
		return fmt.Errorf("refresh topics: %w", ctx.Err())
	}
}

// syncACLs runs one ACL sync when it is on, and keeps its outcome for
// Status.
func (mr *Mirror) syncACLs(ctx context.Context, srcAdm, dstAdm *kadm.Client) {
	if !mr.cfg.ACLs {
		return
	}
	rep, err := SyncACLs(ctx, srcAdm, dstAdm, mr.sel, mr.groupSelected, ACLOptions{Wildcards: mr.cfg.ACLWildcards})
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		err = rep.Err()
	}
	sum := ACLSummary{Created: rep.Count(ACLCreated), Present: rep.Count(ACLPresent), Skipped: rep.Count(ACLSkipped),
		Errors: rep.Count(ACLError), At: time.Now()}
	if err != nil {
		sum.LastError = err.Error()
		mr.log.Warn("ACL sync", zap.Error(err))
	} else if sum.Created > 0 {
		mr.log.Info("ACL sync", zap.Int("created", sum.Created), zap.Int("present", sum.Present), zap.Int("skipped", sum.Skipped))
	}
	for _, o := range []ACLOutcome{ACLCreated, ACLError} {
		mr.m.acls.WithLabelValues(mr.cfg.Name, string(o)).Add(float64(rep.Count(o)))
	}
	mr.mu.Lock()
	mr.acls = &sum
	mr.mu.Unlock()
}

// groupSelected reports whether a group is one of the configured groups.
func (mr *Mirror) groupSelected(g string) bool {
	for _, re := range mr.groups {
		if re.MatchString(g) {
			return true
		}
	}
	return false
}

// ACLSummary is the outcome of the last ACL sync.
type ACLSummary struct {
	Created, Present, Skipped, Errors int
	LastError                         string
	At                                time.Time
}

// positionLoop reads the source's last stable offsets every second, so
// lag is known for partitions that have nothing new to fetch.
func (mr *Mirror) positionLoop(ctx context.Context, srcAdm *kadm.Client) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		mr.refreshPositions(ctx, srcAdm)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// refreshPositions reads the source's last stable offsets, for lag, and
// its log start offsets: a map is trimmed below the log start (TrimBefore),
// so maps do not grow forever with retention. Group sync resumes a
// position below it at the map's Start, as the source would reset it.
func (mr *Mirror) refreshPositions(ctx context.Context, srcAdm *kadm.Client) {
	mr.mu.Lock()
	names := map[string]bool{}
	for k := range mr.parts {
		names[k.topic] = true
	}
	mr.mu.Unlock()
	if len(names) == 0 {
		return
	}
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	offs, err := srcAdm.ListCommittedOffsets(ctx, list...)
	if err != nil && ctx.Err() == nil {
		mr.log.Debug("list source end offsets", zap.Error(err))
	}
	starts, err := srcAdm.ListStartOffsets(ctx, list...)
	if err != nil && ctx.Err() == nil {
		mr.log.Debug("list source start offsets", zap.Error(err))
	}
	mr.mu.Lock()
	offs.Each(func(o kadm.ListedOffset) {
		if p := mr.parts[tp{o.Topic, o.Partition}]; p != nil && o.Err == nil {
			p.hwm = o.Offset
		}
	})
	starts.Each(func(o kadm.ListedOffset) {
		if p := mr.parts[tp{o.Topic, o.Partition}]; p != nil && o.Err == nil {
			p.om.TrimBefore(o.Offset)
		}
	})
	mr.mu.Unlock()
	mr.updateLag()
}

// forgetPartitionMetrics deletes a partition's series (lag, failing): in
// scale-out, after it moved to another process, which reports them now.
func (mr *Mirror) forgetPartitionMetrics(k tp) {
	part := strconv.Itoa(int(k.partition))
	for _, g := range []*prometheus.GaugeVec{mr.m.lagRecords, mr.m.lagSeconds, mr.m.failing} {
		g.DeleteLabelValues(mr.cfg.Name, k.topic, part)
	}
}

// sourceAdmin returns an admin client of the source: the running mirror's
// (a control plane polls CaughtUp many times during a cutover; a client
// per call costs a connection and a metadata round each time), or a new
// one that done closes.
func (mr *Mirror) sourceAdmin() (*kadm.Client, func(), error) {
	mr.mu.Lock()
	adm := mr.srcAdm
	mr.mu.Unlock()
	if adm != nil {
		return adm, func() {}, nil
	}
	src, err := mr.sourceClient()
	if err != nil {
		return nil, nil, fmt.Errorf("source client: %w", err)
	}
	return kadm.NewClient(src), src.Close, nil
}

// OffsetMap returns the offset map of a source partition, nil if the
// partition is not mirrored. The map is live: it grows as copying goes on.
func (mr *Mirror) OffsetMap(topic string, partition int32) *offsetmap.Map {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	if p, ok := mr.parts[tp{topic, partition}]; ok {
		return p.om
	}
	return nil
}

// PartitionStatus is the state of one mirrored partition.
type PartitionStatus struct {
	Topic       string
	Partition   int32
	TargetTopic string
	// Next is the next source offset to copy; HighWatermark the source's.
	Next, HighWatermark int64
	// TargetNext is the target offset after the last copied record.
	TargetNext int64
	LagRecords int64
	// LagSeconds is the age of the oldest record not yet copied.
	LagSeconds float64
	Failing    bool
	LastError  string
	LastCommit time.Time
	// LostOffsets counts the source offsets of every gap the mirror went
	// on after (gap policy continue): deleted on the source before they
	// were copied. LastLost is the latest such gap (zero if none).
	LostOffsets int64
	LastLost    offsetmap.LostRange
}

// Status is a snapshot of the mirror: in scale-out mode, of the
// partitions this process copies.
type Status struct {
	Name       string
	Ready      bool
	Partitions []PartitionStatus
	// TopicErrors names topics not mirrored and why.
	TopicErrors map[string]string
	LastError   string
	// ACLs is the outcome of the last ACL sync (nil when ACL sync is off).
	ACLs *ACLSummary
}

// Status returns a snapshot of every partition's progress.
func (mr *Mirror) Status() Status {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	st := Status{Name: mr.cfg.Name, Ready: isClosed(mr.readyCh), LastError: mr.lastErr, TopicErrors: map[string]string{}}
	if mr.acls != nil {
		a := *mr.acls
		st.ACLs = &a
	}
	for k, v := range mr.topicErr {
		st.TopicErrors[k] = v
	}
	for k, p := range mr.parts {
		if mr.cfg.ScaleOut && (mr.assign == nil || !mr.assign.owns(k)) {
			continue // another process of a scaled-out mirror copies it (or none yet)
		}
		ps := PartitionStatus{Topic: p.src.topic, Partition: p.src.partition, TargetTopic: p.target,
			Next: p.om.Next(), HighWatermark: p.hwm, TargetNext: p.om.TargetNext(),
			Failing: p.failures > 0, LastError: p.lastErr, LastCommit: p.lastCommit,
			LostOffsets: p.lostOffsets, LastLost: p.lastLost}
		if p.hwm >= 0 {
			ps.LagRecords = max(0, p.hwm-ps.Next)
		}
		if ps.LagRecords > 0 && !p.oldestTS.IsZero() {
			ps.LagSeconds = time.Since(p.oldestTS).Seconds()
		}
		st.Partitions = append(st.Partitions, ps)
	}
	sort.Slice(st.Partitions, func(i, j int) bool {
		a, b := st.Partitions[i], st.Partitions[j]
		return a.Topic < b.Topic || (a.Topic == b.Topic && a.Partition < b.Partition)
	})
	return st
}

// CaughtUp reports whether every mirrored partition of the given source
// topics (all mirrored topics when none are given) has been copied up to
// the source's last stable offset as read now, with no transaction pending
// there (last stable offset = end offset), and names the first that has
// not. A control plane calls it after gating producers: then "caught up"
// stays true. Pending transactions count as not caught up because a
// transaction's end is written in two steps: EndTxn is answered once the
// coordinator logged the decision, and the markers that make the records
// committed reach the partitions after. A cutover that flipped in between
// would see the committed records appear on the source after the flip.
func (mr *Mirror) CaughtUp(ctx context.Context, topicNames ...string) (bool, string, error) {
	mr.mu.Lock()
	names := map[string]bool{}
	for k := range mr.parts {
		if len(topicNames) == 0 || slices.Contains(topicNames, k.topic) {
			names[k.topic] = true
		}
	}
	mr.mu.Unlock()
	for _, t := range topicNames {
		if !names[t] {
			return false, t, fmt.Errorf("topic %s is not mirrored", t)
		}
	}
	adm, done, err := mr.sourceAdmin()
	if err != nil {
		return false, "", err
	}
	defer done()
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	sort.Strings(list)
	ends, err := adm.ListCommittedOffsets(ctx, list...)
	if err != nil {
		return false, "", fmt.Errorf("source last stable offsets: %w", err)
	}
	highs, err := adm.ListEndOffsets(ctx, list...)
	if err != nil {
		return false, "", fmt.Errorf("source end offsets: %w", err)
	}
	behind := ""
	highs.Each(func(o kadm.ListedOffset) {
		if l, ok := ends.Lookup(o.Topic, o.Partition); behind == "" && o.Err == nil && ok && l.Err == nil && l.Offset < o.Offset {
			behind = fmt.Sprintf("%s/%d (a transaction is open or its markers are not written: last stable offset %d, end %d)",
				o.Topic, o.Partition, l.Offset, o.Offset)
		}
	})
	if behind != "" {
		return false, behind, nil
	}
	next := func(o kadm.ListedOffset) (int64, bool) {
		om := mr.OffsetMap(o.Topic, o.Partition)
		if om == nil {
			return 0, false
		}
		return om.Next(), true
	}
	if mr.assign != nil {
		// Scaled out: other processes copy some partitions; what all of
		// them committed is in the checkpoint topic.
		maps, err := ReadOffsetMaps(ctx, mr.cfg.TargetBootstrap, mr.cfg.Name, append(mr.dstSec.KgoOpts(0), mr.opts...)...)
		if err != nil {
			return false, "", err
		}
		next = func(o kadm.ListedOffset) (int64, bool) {
			om := maps[TopicPartition{o.Topic, o.Partition}]
			if om == nil {
				return 0, false
			}
			return om.Next(), true
		}
	}
	ends.Each(func(o kadm.ListedOffset) {
		if behind != "" {
			return
		}
		if n, ok := next(o); o.Err != nil || !ok || n < o.Offset {
			behind = o.Topic + "/" + strconv.Itoa(int(o.Partition))
		}
	})
	return behind == "", behind, nil
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
