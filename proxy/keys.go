package proxy

// API keys the proxy treats specially.
const (
	keyProduce                int16 = 0
	keyFetch                  int16 = 1
	keyListOffsets            int16 = 2
	keyMetadata               int16 = 3
	keyOffsetCommit           int16 = 8
	keyOffsetFetch            int16 = 9
	keyFindCoordinator        int16 = 10
	keyJoinGroup              int16 = 11
	keyHeartbeat              int16 = 12
	keyLeaveGroup             int16 = 13
	keySyncGroup              int16 = 14
	keyApiVersions            int16 = 18
	keyCreateTopics           int16 = 19
	keyDeleteRecords          int16 = 21
	keyInitProducerID         int16 = 22
	keyOffsetForLeaderEpoch   int16 = 23
	keyAddPartitionsToTxn     int16 = 24
	keyAddOffsetsToTxn        int16 = 25
	keyEndTxn                 int16 = 26
	keyTxnOffsetCommit        int16 = 28
	keyDescribeQuorum         int16 = 55
	keyDescribeCluster        int16 = 60
	keyConsumerGroupHeartbeat int16 = 68
	keyShareFetch             int16 = 78
	keyStreamsGroupHeartbeat  int16 = 88
)
