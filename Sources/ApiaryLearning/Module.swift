// Module ApiaryLearning.
