// Package awsdownlink gives the device API the pending desired-state changes (deltas) of things
// whose shadows live in AWS IoT (the AWS pipeline, serve --queue): it is the AWS mode's
// ingest.Deltas, as the registry is local mode's, so a thing's delta rides in the 2.04 of a
// device's report (Accept: 50), answers GET /{type}/{id} and goes out to observers.
//
// Sources. The gateway connects to the account's AWS IoT data endpoint over MQTT with its own
// X.509 certificate and subscribes (QoS 1, a persistent session: see connectLoop) to the
// classic shadow's update/delta and delete/accepted topics of every thing (Topics), and with
// Documents to update/documents. Named shadows' topics (the "coapgw" bookkeeping shadow of FIFO
// mode) are not matched. A delta message's properties are merged into the thing's delta; a
// documents message (published on every accepted update, a device's report included) gives the
// whole current desired and reported state, from which the delta is computed as AWS computes
// it; a deleted shadow has no delta. Messages are applied by shadow version: an older one than
// the cache's is dropped. AWS publishes no delta message when a report empties the delta:
// without Documents the gateway reads a pending delta's shadow again 10s after its device's
// request (refresh.go, which weighs the two).
//
// First contact. The cache holds only things whose device asked (a report with Accept, a GET)
// since the start: on a thing's first request the gateway calls GetThingShadow once (rate
// limited; coapgw_downlink_aws_fetches_total counts every call) and the answer waits for it at
// most FetchBudget (100ms). A slower call does not hold the 2.04: the device gets it without
// the delta, and the delta comes with its next report (or as an Observe notification when the
// call returns). This covers a delta set while the gateway was down, or before the device first
// reached this gateway. A failed call is retried on the device's next request. The device API
// asks on a CoAP socket's reader, which reads nothing while it waits: waits are allowed only
// within a tenth of the time (waitFetch), so a burst of first requests after a restart costs
// the other devices at most FetchBudget at a time, and those past the share get their 2.04 at
// once, without the delta.
//
// An entry is trusted for maxAge (24h): a message AWS could not deliver would otherwise leave it
// wrong until evicted; the device's next request after that asks GetThingShadow again.
//
// Bounds. The cache is bounded by bytes (CacheBytes, an estimate per entry); beyond it the
// oldest entries go and their things are fetched again on their next request. Notifications go
// through a queue of 1024 names (beyond: dropped, counted); GetThingShadow calls through a
// queue of 1024 names and 8 workers.
//
// Config keys (serve): iot-downlink-endpoint, iot-downlink-client-id, iot-downlink-cert-file,
// iot-downlink-key-file, iot-downlink-ca-file, iot-downlink-cache-bytes,
// iot-downlink-fetch-budget, iot-downlink-fetch-rate, iot-downlink-documents; GetThingShadow
// goes to aws-endpoint when that is set (tests against moto), else to https://<the endpoint's
// host>. docs/downlink.md has the costs.
//
// Metrics:
//
//	coapgw_downlink_aws_cache_entries          things whose delta the gateway keeps
//	coapgw_downlink_aws_cache_bytes            estimated memory of the cache
//	coapgw_downlink_aws_pending_deltas         cached things with a pending delta
//	coapgw_downlink_aws_cache_evictions_total  entries dropped to stay within the bytes
//	coapgw_downlink_aws_cache_resets_total     cache emptied: the MQTT session was not resumed
//	coapgw_downlink_aws_fetches_total{outcome} GetThingShadow calls: ok, error; not made: rate_limited, queue_full
//	coapgw_downlink_aws_fetch_waits_total{outcome} requests that met a call in flight: answered, late, skipped
//	coapgw_downlink_aws_refreshes_total{outcome} GetThingShadow of a pending delta: ok, error, rate_limited
//	coapgw_downlink_aws_messages_total{topic,outcome} delta, documents, delete: applied, stale, not_cached, invalid
//	coapgw_downlink_aws_mqtt_connected         1 while connected
//	coapgw_downlink_aws_mqtt_connects_total    connections made
//	coapgw_downlink_aws_mqtt_lost_total        connections lost or refused
//	coapgw_downlink_aws_notify_dropped_total   notifications dropped (queue full)
package awsdownlink
