//! An authoritative DNS server on 127.0.0.1 (hickory-server, UDP and TCP on one port) whose records
//! a test changes while it runs, and which it can turn to answering SERVFAIL.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

#[derive(Default)]
struct Zone {
    records: Vec<Record>,
    servfail: bool,
}

/// The running server; stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    _server: Server<Handler>,
}

impl DnsServer {
    pub async fn start() -> Self {
        let (udp, tcp, addr) = Self::bind().await;
        let zone = Arc::new(Mutex::new(Zone::default()));
        let mut server = Server::new(Handler(zone.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        Self {
            addr,
            zone,
            _server: server,
        }
    }

    /// A UDP socket on a free port and a TCP listener on the same port. The port is free for UDP
    /// when the system hands it out, but a TCP socket may hold it (another test's connection):
    /// then another port is tried.
    async fn bind() -> (UdpSocket, TcpListener, SocketAddr) {
        for _ in 0..20 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            match TcpListener::bind(addr).await {
                Ok(tcp) => return (udp, tcp, addr),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("cannot listen on {addr} over TCP: {e}"),
            }
        }
        panic!("no port free for both UDP and TCP in 20 tries")
    }

    /// `name`'s A records become `ips`, with `ttl` seconds.
    pub fn set_a(&self, name: &str, ips: &[Ipv4Addr], ttl: u32) {
        let records = ips
            .iter()
            .map(|ip| Record::from_rdata(fqdn(name), ttl, RData::A(A(*ip))))
            .collect();
        self.replace(name, records);
    }

    /// `name`'s SRV records become `targets` (port, weight, target host), priority 10, with `ttl`.
    pub fn set_srv(&self, name: &str, targets: &[(u16, u16, &str)], ttl: u32) {
        let records = targets
            .iter()
            .map(|(port, weight, target)| {
                let srv = SRV::new(10, *weight, *port, fqdn(target));
                Record::from_rdata(fqdn(name), ttl, RData::SRV(srv))
            })
            .collect();
        self.replace(name, records);
    }

    /// Answers SERVFAIL to everything (true) or serves the records again (false).
    pub fn set_servfail(&self, servfail: bool) {
        self.zone.lock().unwrap().servfail = servfail;
    }

    fn replace(&self, name: &str, records: Vec<Record>) {
        let mut zone = self.zone.lock().unwrap();
        let name = fqdn(name);
        zone.records.retain(|r| r.name != name);
        zone.records.extend(records);
    }
}

fn fqdn(name: &str) -> Name {
    let mut name = Name::from_ascii(name).unwrap();
    name.set_fqdn(true);
    name
}

struct Handler(Arc<Mutex<Zone>>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let Ok(info) = request.request_info() else {
            return answer(request, &mut response_handle, ResponseCode::FormErr, Vec::new()).await;
        };
        let (name, kind) = (info.query.name().clone(), info.query.query_type());
        let (code, answers) = {
            let zone = self.0.lock().unwrap();
            let named: Vec<&Record> = zone
                .records
                .iter()
                .filter(|r| LowerName::from(&r.name) == name)
                .collect();
            if zone.servfail {
                (ResponseCode::ServFail, Vec::new())
            } else if named.is_empty() {
                (ResponseCode::NXDomain, Vec::new())
            } else {
                let answers: Vec<Record> = named
                    .into_iter()
                    .filter(|r| r.record_type() == kind)
                    .cloned()
                    .collect();
                (ResponseCode::NoError, answers)
            }
        };
        answer(request, &mut response_handle, code, answers).await
    }
}

async fn answer<R: ResponseHandler>(
    request: &Request,
    response_handle: &mut R,
    code: ResponseCode,
    answers: Vec<Record>,
) -> ResponseInfo {
    let mut metadata = Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
    metadata.authoritative = true;
    metadata.response_code = code;
    let response =
        MessageResponseBuilder::from_message_request(request).build(metadata, answers.iter(), [], [], []);
    response_handle
        .send_response(response)
        .await
        .expect("the test DNS server sends its answer")
}
