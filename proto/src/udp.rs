//! UDP sockets for QUIC endpoints, client and server alike: bound, non-blocking, and with
//! receive buffers big enough for bursts (one socket carries many connections). Here, so
//! both sides share one way to open them; behind the `io` feature.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// A bound, non-blocking UDP socket and the receive buffer it really got.
pub struct BoundSocket {
    /// The socket, bound and non-blocking, ready to hand to a QUIC endpoint.
    pub socket: UdpSocket,
    /// Bytes the kernel granted for receiving (it may be less than asked for).
    pub recv_buffer: usize,
}

/// Binds `addr` (an IPv6 address is dual-stack) with the receive and send buffers asked
/// for, in bytes. Linux caps `SO_RCVBUF` at `net.core.rmem_max` (about 208 KiB by
/// default, which drops fan-out bursts and handshake storms); a process allowed to
/// (root, `CAP_NET_ADMIN`) gets the full size through `SO_RCVBUFFORCE`, as DNS servers
/// do. Anyone else gets what the cap allows: a smaller buffer is not an error (see
/// [`BoundSocket::recv_buffer`]); failing to create or bind the socket is.
pub fn bind_udp(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
) -> io::Result<BoundSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer still works, it just drops sooner.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    let _ = socket.set_send_buffer_size(send_buffer);
    // Linux reports twice what it was asked for (the other half is its bookkeeping).
    let granted = |s: &socket2::Socket| {
        let reported = s.recv_buffer_size().unwrap_or(0);
        if cfg!(target_os = "linux") {
            reported / 2
        } else {
            reported
        }
    };
    if granted(&socket) < recv_buffer {
        force_recv_buffer(&socket, recv_buffer);
    }
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let recv_buffer = granted(&socket);
    Ok(BoundSocket {
        socket: socket.into(),
        recv_buffer,
    })
}

#[cfg(target_os = "linux")]
fn force_recv_buffer(socket: &socket2::Socket, size: usize) {
    use std::os::fd::AsRawFd;
    let Ok(size) = libc::c_int::try_from(size) else {
        return;
    };
    // SAFETY: the fd is open for the duration of the call (we hold the socket), and the
    // option value is a c_int whose size we pass; an unprivileged caller gets EPERM.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn force_recv_buffer(_: &socket2::Socket, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks for more than Linux's default cap (208 KiB). A privileged process (root here
    /// and in CI) must get all of it through `SO_RCVBUFFORCE`; anyone else gets at least
    /// something.
    #[test]
    fn binds_loopback_and_gets_its_buffer_when_privileged() {
        let wanted = 8 << 20;
        let bound = bind_udp("127.0.0.1:0".parse().unwrap(), wanted, 1 << 20).unwrap();
        assert!(bound.socket.local_addr().unwrap().port() != 0);
        // SAFETY: geteuid has no preconditions and cannot fail.
        let privileged = cfg!(target_os = "linux") && unsafe { libc::geteuid() } == 0;
        if privileged {
            assert!(bound.recv_buffer >= wanted, "{}", bound.recv_buffer);
        } else {
            assert!(bound.recv_buffer > 1024, "{}", bound.recv_buffer);
        }
    }
}
