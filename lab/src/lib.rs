//! Glimpse's experiment lab, behind the `glimpse-lab` binary. Tools that drive Glimpse
//! from outside or drive its dispatcher core in simulation; none links the front-end.
//!
//! * [`harness`] — `glimpse-lab sweep`: the seed's four experiments (workers, loss, delay,
//!   failure) run against real Glimpse processes and against a baseline of the seed's TCP
//!   design in the same invocation, with the impairment emulator (`glimpse-netem`) on every
//!   link, confidence intervals and plots.
//! * [`load`] — `glimpse-lab load`: closed- and open-loop load against a running deployment
//!   over the JSON API, KServe v2 HTTP (binary tensors) or KServe v2 gRPC, with latency
//!   percentiles of every request.
//! * [`sim`] — `glimpse-lab simulate`: the dispatcher's real core driven by simulated nodes
//!   on a virtual clock, validated against the sweeps and projected to 1,000 nodes.
//! * [`placement`] — `glimpse-lab placement`: a fleet with one slow node under real load,
//!   today's placement against least-outstanding, beside its simulated twin.
//! * [`uplink`] — `glimpse-lab uplink`: a burst of uploads from one client over an impaired
//!   link, HTTP/2 against HTTP/3, the client's leg that the front-end's HTTP/3 serves.
//! * [`stats`] — mean, Student-t 95% confidence intervals, percentiles (all of them report
//!   with them).

pub mod harness;
pub mod load;
pub mod placement;
pub mod sim;
pub mod stats;
pub mod uplink;
