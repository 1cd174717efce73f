//! Where a connection lands in single-port mode: on the core whose CPU received
//! its packets.
//!
//! Every core listens on the same port with `SO_REUSEPORT`, and the kernel picks
//! one listener per new connection. Left to itself it picks by a hash of the
//! addresses, so a connection's packets are received on one CPU (the one its NIC
//! queue's interrupt is pinned to, `tuning/tidewater-tune irq`) and served on
//! another, with every byte crossing between the two caches. Here each listener
//! says which CPU it serves (`SO_INCOMING_CPU`, which kernels from 6.2 honour when
//! they pick by hash), and once the last core has joined a port's group, a classic
//! BPF program is attached to the group that maps the receiving CPU to that CPU's
//! listener (`SO_ATTACH_REUSEPORT_CBPF`, any kernel from 4.6). A CPU no core runs
//! on gets the kernel's own pick.
//!
//! The program answers by the order the sockets joined in, so it holds while the
//! group is this server's alone: another process of the same user listening on
//! the same address and port with SO_REUSEPORT would join it (and a closed
//! listener reorders it, which happens only at the stop).
//!
//! Owns the order in which the cores' sockets joined each port's group (the BPF
//! program answers with an index in that order) and the program. Never: binds in
//! per-core mode (one port per core needs no choosing), or fails a start because
//! the program could not be attached (placement is a matter of speed, not of
//! correctness: it warns).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// The listening sockets of single-port mode, per address: the CPU of each, in the
/// order they joined the kernel's group.
pub struct Groups {
    cores: usize,
    joined: Mutex<HashMap<SocketAddr, Vec<usize>>>,
}

impl Groups {
    /// For a server of `cores` cores.
    pub fn new(cores: usize) -> Groups {
        Groups {
            cores,
            joined: Mutex::new(HashMap::new()),
        }
    }
}

/// A listening socket on `addr`. SO_REUSEADDR, so a restart binds beside the
/// TIME_WAIT sockets of its last run's connections. With `group` (single-port
/// mode) SO_REUSEPORT too, and the socket serves connections received on `cpu`;
/// never SO_REUSEPORT otherwise: a second server started on a taken port would
/// silently get half of its connections instead of failing to start.
pub fn listen(
    addr: SocketAddr,
    group: Option<(&Groups, usize)>,
) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    let Some((groups, cpu)) = group else {
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        return Ok(socket);
    };
    socket.set_reuse_port(true)?;
    if let Err(e) = socket.set_cpu_affinity(cpu) {
        tracing::warn!(%addr, cpu, "cannot set SO_INCOMING_CPU on a listener: {e}");
    }
    // A socket joins its group when it listens: the lock keeps the order it
    // joined in and the order recorded the same.
    let mut joined = groups
        .joined
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // The bound address: a port 0 (tests) is the port given.
    let bound = socket.local_addr()?.as_socket().unwrap_or(addr);
    let order = joined.entry(bound).or_default();
    order.push(cpu);
    if order.len() == groups.cores {
        match attach(&socket, order) {
            Ok(()) => {
                tracing::info!(%addr, cpus = ?order, "connections go to the core of the CPU that received them")
            }
            Err(e) => tracing::warn!(%addr,
                "cannot attach the reuseport program ({e}): the kernel spreads connections over the cores by hash{}",
                " (kernels from 6.2 still prefer the listener of the receiving CPU)"),
        }
    }
    Ok(socket)
}

/// The classic BPF program of a group whose listeners serve `cpus`, in the order
/// they joined: load the CPU that received the packet, answer the index of its
/// listener, or an index past the group (the kernel then picks by hash).
fn program(cpus: &[usize]) -> Vec<libc::sock_filter> {
    const NONE: u32 = u32::MAX;
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut p = vec![op(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        0,
        0,
        (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
    )];
    for (index, &cpu) in cpus.iter().enumerate() {
        // Equal: on to the next instruction, the answer; else skip it.
        p.push(op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            cpu as u32,
        ));
        p.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, index as u32));
    }
    p.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, NONE));
    p
}

/// Attaches [`program`] to the group `socket` belongs to.
fn attach(socket: &socket2::Socket, cpus: &[usize]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut filter = program(cpus);
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // `prog` points at `filter`, which lives until the call returns (the kernel
    // copies the program).
    // SAFETY: both pointers are valid for the call; the length is `prog`'s size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn the_program_answers_each_cpus_listener_and_leaves_others_to_the_kernel() {
        let p = program(&[3, 1]);
        // ld cpu; jeq 3; ret 0; jeq 1; ret 1; ret none.
        assert_eq!(p.len(), 6);
        assert_eq!(p[1].k, 3);
        assert_eq!(
            (p[2].code, p[2].k),
            ((libc::BPF_RET | libc::BPF_K) as u16, 0)
        );
        assert_eq!(p[3].k, 1);
        assert_eq!(p[4].k, 1);
        assert_eq!(p[5].k, u32::MAX);
    }

    /// The first two CPUs this process may use; None (the test skips) with one.
    fn two_cpus() -> Option<Vec<usize>> {
        let cpus: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .take(2)
            .collect();
        if cpus.len() < 2 {
            eprintln!("SKIPPED: needs two CPUs, this process may use {cpus:?}");
            return None;
        }
        Some(cpus)
    }

    const EACH: usize = 20;

    /// Makes `EACH` connections to `addr` from a thread pinned to each CPU of
    /// `by_cpu` in turn (over loopback a packet is received on the CPU that sent
    /// it), accepts them wherever they went (the handshake may finish in a softirq
    /// after the connect returns: waits up to 10 s), and returns how many of each
    /// CPU's went to that CPU's listener.
    fn landed(addr: SocketAddr, by_cpu: &[(usize, &socket2::Socket)]) -> Vec<usize> {
        for (_, l) in by_cpu {
            l.set_nonblocking(true).unwrap();
        }
        let mut right = Vec::new();
        for &(cpu, _) in by_cpu {
            let held = std::thread::spawn(move || {
                assert!(core_affinity::set_for_current(core_affinity::CoreId {
                    id: cpu
                }));
                (0..EACH)
                    .map(|_| std::net::TcpStream::connect(addr).unwrap())
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let (mut got, mut total) = (0, 0);
            while total < EACH && std::time::Instant::now() < deadline {
                let mut none = true;
                for &(c, l) in by_cpu {
                    match l.accept() {
                        Ok(_) => {
                            none = false;
                            total += 1;
                            got += usize::from(c == cpu);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                if none {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            assert_eq!(total, EACH, "every connection from CPU {cpu} was accepted");
            drop(held);
            right.push(got);
        }
        right
    }

    /// Through [`listen`], as the server binds: the program is attached once the
    /// second socket joins, and every connection lands on its CPU's listener.
    #[test]
    fn connections_land_on_the_listener_of_the_cpu_that_received_them() {
        let Some(cpus) = two_cpus() else { return };
        let groups = Groups::new(2);
        // Listeners join in the other order than the CPUs, so an index that merely
        // followed the CPU number would fail.
        let first = listen("127.0.0.1:0".parse().unwrap(), Some((&groups, cpus[1]))).unwrap();
        let addr = first.local_addr().unwrap().as_socket().unwrap();
        let second = listen(addr, Some((&groups, cpus[0]))).unwrap();
        let got = landed(addr, &[(cpus[1], &first), (cpus[0], &second)]);
        assert_eq!(got, vec![EACH, EACH], "connections on their CPU's listener");
    }

    /// The program alone (no `SO_INCOMING_CPU`, which newer kernels honour
    /// anyway) places every connection; the kernel's hash alone, what single-port
    /// mode did before, places about half (printed with `--nocapture`).
    #[test]
    fn the_program_alone_places_what_the_hash_spreads() {
        use socket2::{Domain, Protocol, Socket, Type};
        let Some(cpus) = two_cpus() else { return };
        let bare = |addr: SocketAddr| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            s.listen(64).unwrap();
            s
        };
        let a = bare("127.0.0.1:0".parse().unwrap());
        let addr = a.local_addr().unwrap().as_socket().unwrap();
        let b = bare(addr);
        let hashed = landed(addr, &[(cpus[0], &a), (cpus[1], &b)]);
        eprintln!(
            "kernel hash: {} of {} connections on the receiving CPU's listener",
            hashed.iter().sum::<usize>(),
            2 * EACH
        );
        attach(&b, &[cpus[0], cpus[1]]).unwrap();
        let placed = landed(addr, &[(cpus[0], &a), (cpus[1], &b)]);
        assert_eq!(placed, vec![EACH, EACH], "with the program");
    }
}
