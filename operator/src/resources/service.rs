//! The cluster's two Services.
//! - Headless (`<cluster>-nodes`): the StatefulSet's governing Service. Gives every node a
//!   stable DNS name, `<node>.<cluster>-nodes.<namespace>.svc`, which the operator uses to
//!   reach one node's API and which polling Tentacles can be pointed at (in HA each
//!   Tentacle polls every node). Publishes nodes that are not Ready, so a node that is
//!   starting or migrating the schema can already be reached by name.
//! - Client (`<cluster>`): a ClusterIP in front of the Ready nodes, for the web portal and
//!   API (8080) and polling Tentacles (10943). Users put their Ingress or LoadBalancer in
//!   front of it.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{labels, names, owned_meta};
use crate::api::OctopusCluster;

/// The headless Service (clusterIP None, publishNotReadyAddresses) with web, tentacle and
/// gRPC ports.
pub fn headless(cluster: &OctopusCluster) -> Service {
    let name = cluster.name_any();
    Service {
        metadata: owned_meta(
            cluster,
            names::headless_service(&name),
            labels::common_labels(&name, None),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(labels::selector_labels(&name)),
            ports: Some(vec![
                port(names::WEB_PORT_NAME, names::WEB_PORT),
                port(names::TENTACLE_PORT_NAME, names::TENTACLE_PORT),
                port(names::GRPC_PORT_NAME, names::GRPC_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service (ClusterIP) with web and tentacle ports.
pub fn client(cluster: &OctopusCluster) -> Service {
    let name = cluster.name_any();
    Service {
        metadata: owned_meta(
            cluster,
            names::client_service(&name),
            labels::common_labels(&name, None),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::selector_labels(&name)),
            ports: Some(vec![
                port(names::WEB_PORT_NAME, names::WEB_PORT),
                port(names::TENTACLE_PORT_NAME, names::TENTACLE_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A TCP port forwarded to the container port of the same name.
fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    fn ports(service: &Service) -> Vec<(String, i32)> {
        service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect()
    }

    fn owned(service: &Service) {
        let owners = service
            .metadata
            .owner_references
            .as_ref()
            .expect("owner refs");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, fixtures::UID);
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
    }

    #[test]
    fn headless_service_governs_the_nodes() {
        let svc = headless(&fixtures::cluster());
        assert_eq!(svc.metadata.name.as_deref(), Some("octo-nodes"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some(fixtures::NAMESPACE));
        owned(&svc);
        let spec = svc.spec.as_ref().expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector, Some(labels::selector_labels("octo")));
        assert_eq!(
            ports(&svc),
            [
                ("web".to_owned(), 8080),
                ("tentacle".to_owned(), 10943),
                ("grpc".to_owned(), 8443)
            ]
        );
    }

    #[test]
    fn client_service_serves_web_and_tentacles() {
        let svc = client(&fixtures::cluster());
        assert_eq!(svc.metadata.name.as_deref(), Some("octo"));
        owned(&svc);
        let spec = svc.spec.as_ref().expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(spec.publish_not_ready_addresses, None);
        assert_eq!(spec.selector, Some(labels::selector_labels("octo")));
        assert_eq!(
            ports(&svc),
            [("web".to_owned(), 8080), ("tentacle".to_owned(), 10943)]
        );
    }

    #[test]
    fn services_target_named_container_ports() {
        for svc in [headless(&fixtures::cluster()), client(&fixtures::cluster())] {
            for port in svc.spec.and_then(|s| s.ports).unwrap_or_default() {
                assert_eq!(port.target_port, port.name.map(IntOrString::String));
            }
        }
    }
}
