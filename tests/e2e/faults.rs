//! Faults (issue 13): what a class of strangers can do to a kernel — processes left behind,
//! stalled subscribers, lost interrupts, replayed or odd protocol messages. One test per item;
//! each is bounded in time and ends whatever it starts. Where ipykernel is the reference, the
//! test says what ipykernel does.

use crate::harness::{Chan, Kernel, Opts, execute_content};
use serde_json::json;
use std::time::{Duration, Instant};

fn test_kernel() -> Kernel {
    Kernel::start(Opts::default().test_runtime()).expect("kernel starts")
}

/// Item 7: the protocol as jupyter_client's `Session` holds it.
///
/// * A replayed signed message is refused and logged. ipykernel: `Session.deserialize` raises
///   "Duplicate Signature" (its `digest_history`), the request is logged as invalid and not run.
/// * `comm_open` for an unknown target gets an immediate `comm_close` on iopub. ipykernel: the
///   comm manager logs "No such comm target registered" and closes the comm.
/// * The heartbeat survives thousands of clients that leave in the middle of a ping (before:
///   about one kernel in four stopped answering for good; ipykernel's ROUTER echo does not).
#[test]
fn item7_replays_unknown_comms_and_heartbeat_dropouts() {
    let mut k = test_kernel();
    // 1. replay: the same signed frames twice (through a second client socket)
    let (frames, id) = k.signed_frames("execute_request", execute_content("print once"));
    k.send_raw(frames.clone()).unwrap();
    let reply = k
        .raw_recv(Duration::from_secs(10))
        .expect("the first copy is answered");
    assert_eq!(k.decode_raw(&reply).unwrap().parent_id(), Some(id.as_str()));
    k.send_raw(frames).unwrap();
    assert!(
        k.raw_recv(Duration::from_millis(500)).is_none(),
        "a replayed request was answered"
    );
    let ran = k
        .unclaimed(Duration::from_millis(200))
        .unwrap()
        .into_iter()
        .filter(|m| m.msg_type == "stream" && m.content["text"] == "once\n")
        .count();
    assert_eq!(ran, 1, "the replayed cell ran again");
    assert!(k.log().contains("replayed message"), "{}", k.log_tail(20));

    // 2. comm_open for a target nobody registered
    let comm_id = uuid::Uuid::new_v4().to_string();
    let open = k
        .send(
            Chan::Shell,
            "comm_open",
            json!({ "comm_id": comm_id, "target_name": "no.such.target", "data": {} }),
        )
        .unwrap();
    let msgs = k.unclaimed(Duration::from_secs(3)).unwrap();
    let close = msgs
        .iter()
        .find(|m| m.msg_type == "comm_close")
        .unwrap_or_else(|| panic!("no comm_close: {msgs:?}"));
    assert_eq!(close.content["comm_id"], comm_id.as_str());
    assert_eq!(close.parent_id(), Some(open.as_str()));

    // 3. heartbeat clients that leave mid-ping: half speak ZeroMQ and vanish after the ping,
    // half send a partial greeting and close
    let url = format!("tcp://{}:{}", k.info.ip, k.info.hb_port);
    let addr = format!("{}:{}", k.info.ip, k.info.hb_port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..4 {
        rt.block_on(async {
            use zeromq::{Socket, SocketSend};
            for i in 0..300 {
                if i % 2 == 0 {
                    let mut s = zeromq::ReqSocket::new();
                    if s.connect(&url).await.is_ok() {
                        let _ = s.send(zeromq::ZmqMessage::from("ping")).await;
                    }
                    drop(s);
                } else if let Ok(mut t) = std::net::TcpStream::connect(&addr) {
                    use std::io::Write;
                    let _ = t.write_all(b"\xff\0\0\0\0\0\0\0\x01\x7f\x03");
                }
            }
        });
        assert!(
            k.heartbeat(Duration::from_secs(5)),
            "heartbeat dead after {} drop-outs",
            (round + 1) * 300
        );
    }
    // no socket left in CLOSE-WAIT on the heartbeat port
    let t0 = Instant::now();
    loop {
        let ss = std::process::Command::new("ss").arg("-tan").output();
        let Ok(ss) = ss else { break };
        let port = format!(":{}", k.info.hb_port);
        let waiting = String::from_utf8_lossy(&ss.stdout)
            .lines()
            .filter(|l| l.contains("CLOSE-WAIT") && l.contains(&port))
            .count();
        if waiting == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{waiting} heartbeat sockets stay in CLOSE-WAIT"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(k.execute("print still").stdout(), "still\n");
}
