package proxy

// ApiVersions: v0-4, answered by the proxy itself.
//
// A client negotiates versions once per connection, but a switch can put
// that connection on another cluster. So the proxy answers with, per key,
// the intersection of what every configured cluster supports and what the
// proxy can rewrite (kmsg's maximum for every key it knows; unknown keys pass
// through, bounded by the clusters). Nothing negotiated before a switch
// becomes invalid after it. Keys one cluster lacks are left out.
// Finalized features are likewise the lowest level all clusters finalize.
//   * v3: client software name and version, features (tagged)

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/wirecheck"
)

func (p *Proxy) apiVersionsResponse(ctx context.Context, hdr requestHeader, body []byte) ([]byte, error) {
	maxV := (&kmsg.ApiVersionsRequest{}).MaxVersion()
	if hdr.Version > maxV {
		// KIP-511: answer an unknown version with a v0 body naming the
		// versions we do support, so the client retries with one of them.
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.Version = 0
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		k := kmsg.NewApiVersionsResponseApiKey()
		k.ApiKey, k.MinVersion, k.MaxVersion = keyApiVersions, 0, maxV
		resp.ApiKeys = append(resp.ApiKeys, k)
		return responseFrame(keyApiVersions, 0, hdr.CorrID, resp.AppendTo(nil)), nil
	}
	known, err := p.knownVersions(ctx)
	if err != nil {
		return nil, err
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = hdr.Version
	resp.ApiKeys = intersectVersions(known)
	if hdr.Version >= 3 {
		intersectFeatures(resp, known)
	}
	return responseFrame(keyApiVersions, hdr.Version, hdr.CorrID, resp.AppendTo(nil)), nil
}

// knownVersions returns the ApiVersions responses of every cluster whose
// versions are known, loading the active cluster's if need be.
func (p *Proxy) knownVersions(ctx context.Context) ([]*kmsg.ApiVersionsResponse, error) {
	p.mu.Lock()
	active := p.active
	p.mu.Unlock()
	if active.apiVersions() == nil {
		lctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
		err := active.loadVersions(lctx)
		cancel()
		if err != nil {
			active.setErr(err)
			return nil, fmt.Errorf("api versions of the active cluster: %w", err)
		}
	}
	var out []*kmsg.ApiVersionsResponse
	for _, name := range p.order {
		u := p.upstreams[name]
		r := u.apiVersions()
		if r == nil {
			// Not reachable yet: its versions cannot bound this answer.
			// Status shows the cluster's error; a switch to it refreshes.
			p.log.Debug("api versions unknown for cluster", zap.String("cluster", name))
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func intersectVersions(known []*kmsg.ApiVersionsResponse) []kmsg.ApiVersionsResponseApiKey {
	if len(known) == 0 {
		return nil
	}
	type rng struct{ min, max int16 }
	acc := map[int16]rng{}
	for _, k := range known[0].ApiKeys {
		acc[k.ApiKey] = rng{k.MinVersion, k.MaxVersion}
	}
	for _, r := range known[1:] {
		seen := map[int16]bool{}
		for _, k := range r.ApiKeys {
			a, ok := acc[k.ApiKey]
			if !ok {
				continue
			}
			seen[k.ApiKey] = true
			acc[k.ApiKey] = rng{max(a.min, k.MinVersion), min(a.max, k.MaxVersion)}
		}
		for key := range acc {
			if !seen[key] {
				delete(acc, key)
			}
		}
	}
	var out []kmsg.ApiVersionsResponseApiKey
	for _, k := range known[0].ApiKeys { // keep the broker's order
		a, ok := acc[k.ApiKey]
		if !ok {
			continue
		}
		if req := kmsg.RequestForKey(k.ApiKey); req != nil {
			// Versions the proxy cannot walk (wirecheck) it could not
			// decode either.
			a.max = min(a.max, req.MaxVersion(), wirecheck.MaxRequestVersion(k.ApiKey))
		}
		if a.min > a.max {
			continue
		}
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k.ApiKey, a.min, a.max
		out = append(out, ak)
	}
	return out
}

func intersectFeatures(resp *kmsg.ApiVersionsResponse, known []*kmsg.ApiVersionsResponse) {
	if len(known) == 0 {
		return
	}
	first := known[0]
	resp.FinalizedFeaturesEpoch = first.FinalizedFeaturesEpoch
	for _, f := range first.SupportedFeatures {
		lo, hi, all := f.MinVersion, f.MaxVersion, true
		for _, r := range known[1:] {
			found := false
			for _, g := range r.SupportedFeatures {
				if g.Name == f.Name {
					found = true
					lo, hi = max(lo, g.MinVersion), min(hi, g.MaxVersion)
				}
			}
			all = all && found
		}
		if all && lo <= hi {
			sf := kmsg.NewApiVersionsResponseSupportedFeature()
			sf.Name, sf.MinVersion, sf.MaxVersion = f.Name, lo, hi
			resp.SupportedFeatures = append(resp.SupportedFeatures, sf)
		}
	}
	for _, f := range first.FinalizedFeatures {
		level, all := f.MaxVersionLevel, true
		for _, r := range known[1:] {
			found := false
			for _, g := range r.FinalizedFeatures {
				if g.Name == f.Name {
					found = true
					level = min(level, g.MaxVersionLevel)
				}
			}
			all = all && found
			resp.FinalizedFeaturesEpoch = max(resp.FinalizedFeaturesEpoch, r.FinalizedFeaturesEpoch)
		}
		if all && level > 0 {
			ff := kmsg.NewApiVersionsResponseFinalizedFeature()
			ff.Name, ff.MinVersionLevel, ff.MaxVersionLevel = f.Name, min(f.MinVersionLevel, level), level
			resp.FinalizedFeatures = append(resp.FinalizedFeatures, ff)
		}
	}
}
