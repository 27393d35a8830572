// Runs the published Durable Streams conformance suite against a running
// durasync server. The package's own CLI does not work from a plain install,
// so we call its exported runner; tests/streams/test_conformance.py starts
// the server and sets DURASYNC_BASE_URL.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.DURASYNC_BASE_URL
if (!baseUrl) {
  throw new Error("set DURASYNC_BASE_URL to the server under test")
}

runConformanceTests({ baseUrl, subscriptions: true })
