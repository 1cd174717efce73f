//! The way of a group request to the core that coordinates its group, when that is
//! not this core: forwarded through the mesh (both modes, so a client that asks any
//! core is served). Each handler runs the request itself when this core owns the
//! group; the owner runs what it receives (`owner.rs`) with the same functions.

use crate::broker::Broker;
use crate::remote::{GroupCall, GroupReply, Reply, Request};

/// Sends `call` to core `core` and waits for its answer; `None` when that core did
/// not answer (it is stopping).
pub async fn forward(broker: &Broker, core: u32, call: GroupCall) -> Option<GroupReply> {
    match broker
        .control()?
        .call(core, Request::Group(Box::new(call)))
        .await?
    {
        Reply::Group(r) => Some(*r),
        _ => None,
    }
}
