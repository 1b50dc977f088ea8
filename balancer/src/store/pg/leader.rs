//! The leader election on PostgreSQL: a dedicated connection (not from the pools) tries
//! a session advisory lock every second; whoever holds it leads, and draws an epoch from
//! `plb_leader_epoch` when it starts to. The lock is the connection's: when the leader
//! dies (`kill -9`, a crash) the server closes its session and frees the lock, and
//! another replica takes it on its next try. A leader that loses its connection (the
//! database restarting) stops leading at once and runs for the lock again.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::NoTls;

use crate::leader::{Lead, Leadership};
use crate::store::StoreError;

/// Key of the advisory lock the leader holds.
const LEADER_LOCK: i64 = 0x504c_425f_4c45_4144; // "PLB_LEAD"

/// How often a follower tries the lock, and a leader checks its connection.
const TRY_EVERY: Duration = Duration::from_secs(1);

/// Takes part in the election for the database at `url` as `replica`.
pub fn elect(url: &str, replica: &str) -> Result<Leadership, StoreError> {
    let mut cfg: tokio_postgres::Config = url.parse()?;
    cfg.application_name(format!("plb-balancer leader election ({replica})"));
    cfg.connect_timeout(Duration::from_secs(5));
    let name = replica.to_string();
    Ok(Leadership::elected(replica, move |tx| run(cfg, name, tx)))
}

async fn run(cfg: tokio_postgres::Config, replica: String, tx: Arc<watch::Sender<Lead>>) {
    loop {
        match cfg.connect(NoTls).await {
            Ok((client, conn)) => {
                let conn = tokio::spawn(conn);
                let mut lead = Lead::default();
                loop {
                    if !lead.leader {
                        let got = client
                            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                            .await
                            .and_then(|r| r.try_get::<_, bool>(0));
                        match got {
                            Ok(true) => {
                                match client
                                    .query_one("SELECT nextval('plb_leader_epoch')", &[])
                                    .await
                                    .and_then(|r| r.try_get::<_, i64>(0))
                                {
                                    Ok(epoch) => {
                                        lead = Lead {
                                            leader: true,
                                            epoch,
                                        };
                                        tracing::info!(%replica, epoch, "this replica leads");
                                        tx.send_replace(lead);
                                    }
                                    Err(e) => {
                                        tracing::warn!(%replica, error = %e, "leader election");
                                        break;
                                    }
                                }
                            }
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(%replica, error = %e, "leader election");
                                break;
                            }
                        }
                    } else if let Err(e) = client.simple_query("SELECT 1").await {
                        tracing::warn!(%replica, error = %e, "the leader lost its connection");
                        break;
                    }
                    tokio::time::sleep(TRY_EVERY).await;
                }
                if lead.leader {
                    tracing::info!(%replica, epoch = lead.epoch, "this replica no longer leads");
                }
                tx.send_replace(Lead::default());
                conn.abort();
            }
            Err(e) => {
                tracing::warn!(%replica, error = %e, "leader election cannot connect");
            }
        }
        tokio::time::sleep(TRY_EVERY).await;
    }
}
