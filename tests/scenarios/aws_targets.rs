//! The s3 and lambda deploy targets against moto (being written).
